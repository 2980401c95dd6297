"""websub"""
