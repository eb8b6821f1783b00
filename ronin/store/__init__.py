"""The only package that speaks SQL: migrations, the database pool and the map."""
