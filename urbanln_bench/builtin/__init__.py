"""Built-in declarative files (cities/, tasks/ at the repository top level) as shipped package data."""
