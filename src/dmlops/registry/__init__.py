"""Model registry on MLflow: register versions with their evidence, aliases, registry URIs, and which
version served an endpoint when."""
