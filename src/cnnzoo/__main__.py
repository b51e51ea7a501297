import atexit
import os
import signal
import sys
import threading

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
if code == 130:
    # CPython remembers a KeyboardInterrupt raised inside Python code that a C extension ran (pybind11's
    # exec, PyRun_String: `run_eval_code_obj` sets `_Py_UnhandledKeyboardInterrupt`) even when cnnzoo
    # caught it, and then ends the process by SIGINT (-2) instead of 130 (seen as a flaky
    # test_ctrl_c_while_starting_up_is_no_traceback). Finish what a normal exit finishes (threads still
    # writing, exit handlers, the streams), then leave with the status the command chose.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
