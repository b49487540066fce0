"""Who is calling: static admin token, OIDC users and service accounts, and their project roles."""
