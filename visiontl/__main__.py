from visiontl.cli import main

raise SystemExit(main())
