from ingestion.cli.app import main

main()
