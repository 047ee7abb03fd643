from cldash.cli import main

raise SystemExit(main())
