"""PostgreSQL + pgvector connector (``pgvector://USER@HOST:PORT/DB?table=T``), psycopg 3."""
