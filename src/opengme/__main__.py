from opengme.cli import main

raise SystemExit(main())
