from batchemo.cli import main

main()
