from genzoo.cli import main

main()
