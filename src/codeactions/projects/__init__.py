"""Projects and their members' roles."""
