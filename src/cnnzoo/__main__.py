try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C in the first instant, before the CLI can handle it: no traceback
    raise SystemExit(130) from None

raise SystemExit(main())
