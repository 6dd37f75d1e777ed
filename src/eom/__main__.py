from eom.cli import main

main()
