from glminterp.cli import main

raise SystemExit(main())
