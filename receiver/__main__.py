from receiver.cli.main import main

raise SystemExit(main())
