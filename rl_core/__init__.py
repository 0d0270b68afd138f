"""rl_core"""
