# Alembic revisions of the run store, one file each (a package only so that the wheel ships them).
