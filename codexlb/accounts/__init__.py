"""Accounts: OAuth login (browser, manual paste, device code), auth.json import/export, token refresh.

Modules: :mod:`.claims` (JWT payloads), :mod:`.oauth` (PKCE, authorize URL, code exchange),
:mod:`.callback` (the local callback listener), :mod:`.login` (one browser login from start to
stored account), :mod:`.device` (device-code flow), :mod:`.authjson` (Codex ``auth.json``),
:mod:`.refresh` (token refresh requests and single flight over the store), :mod:`.storage`
(``open_store`` for CLI commands), :mod:`.views` (account summaries without secrets).
"""
