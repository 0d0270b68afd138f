"""sql_env"""
