"""The runner host: the supervisor process, its zygote and the isolation they set up (stdlib only)."""
