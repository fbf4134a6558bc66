"""python -m capsa.cli"""
from capsa.cli import main

main()
