import signal

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C in the first instant, before the CLI can handle it: no traceback
    raise SystemExit(130) from None

try:
    code = main()
except KeyboardInterrupt:  # a Ctrl-C in the last instant, after the command's own handling
    code = 130
# The command is over: a Ctrl-C while the interpreter shuts down must not turn its exit status (0, or 130
# for an interrupted run) into a death by signal (-2).
signal.signal(signal.SIGINT, signal.SIG_IGN)
raise SystemExit(code)
