"""Background jobs: usage refresh, model registry, proactive token refresh; one leader per cluster.

``CodexLB`` owns a :class:`Scheduler` (``lb.jobs``) and a :class:`ModelRegistry` (``lb.models``).
See :mod:`codexlb.jobs.leader` for the election and :mod:`codexlb.jobs.scheduler` for the loops.
"""

from __future__ import annotations

from codexlb.jobs.base import Job, JobError, JobStatus, read_statuses
from codexlb.jobs.models import ModelRegistry, ModelRegistryJob
from codexlb.jobs.scheduler import Scheduler
from codexlb.jobs.tokens import TokenRefreshJob
from codexlb.jobs.usage import UsageRefreshJob

__all__ = ["Job", "JobError", "JobStatus", "ModelRegistry", "ModelRegistryJob", "Scheduler",
           "TokenRefreshJob", "UsageRefreshJob", "read_statuses"]
