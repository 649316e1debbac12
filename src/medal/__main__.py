from medal.cli import main

raise SystemExit(main())
