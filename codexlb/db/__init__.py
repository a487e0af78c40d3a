"""Storage: models, engines, migrations, encryption and the account store.

Only this package touches ORM rows and sessions; the rest of codexlb gets plain dataclasses.
"""
