"""Client API keys: the store (:mod:`.store`), limits and windows (:mod:`.limits`), the in-memory key
ring and counters the proxy checks (:mod:`.ring`, :mod:`.usage`) and usage reports (:mod:`.report`).

The ``api_keys`` plugin (``plugins/api_keys.py``) enforces them in ``admit_request``.
"""
