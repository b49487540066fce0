"""Project access: may this principal see or change this code, run, log line, secret or project?"""
