from tuckertrt.cli import main

main()
