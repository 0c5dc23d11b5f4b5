"""The web catalog: blueprints, SQLAlchemy models, queries, storage, auth and limits."""
