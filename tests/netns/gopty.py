"""Runs a command on a pseudo-terminal, answering its passphrase prompt.

The Go peer's CLI reads the passphrase from a terminal (only init, show and
serve take --passphrase). Usage: gopty.py ARGV... with the passphrase in
$MAU_GO_PASS. Prints what the command wrote (the prompt removed) and exits
with its status; kills it after $MAU_GO_TIMEOUT seconds (default 60).
"""
import os
import pty
import select
import signal
import sys
import time


def main():
    passphrase = os.environ.get("MAU_GO_PASS", "").encode() + b"\n"
    deadline = time.monotonic() + float(os.environ.get("MAU_GO_TIMEOUT", "60"))
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    out = b""
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not answered and b"Passphrase:" in out:
            os.write(fd, passphrase)
            answered = True
    else:
        os.kill(pid, signal.SIGKILL)
        sys.stdout.write(out.decode(errors="replace"))
        sys.stderr.write("gopty: timed out\n")
        os.waitpid(pid, 0)
        sys.exit(124)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r\n", "\n").replace("Passphrase: ", "", 1)
    sys.stdout.write(text)
    sys.exit(os.waitstatus_to_exitcode(status))


main()
