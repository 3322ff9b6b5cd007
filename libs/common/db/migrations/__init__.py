"""Alembic environment and revision scripts for the kdesk database (run through `libs.common.db.migrate`)."""
