"""Run in a sandbox by tests/test_sandbox.py: executes the code of each ``run`` request and replies with
what the code left in ``result`` or the error it raised, so a test can do anything at run time."""
import os
import traceback

from ab.nn.sandbox import child

if __name__ == "__main__":
    channel = child.channel()
    while (request := channel.receive()) is not None:
        scope = {"channel": channel, "result": None}
        try:
            exec(request["code"], scope)
            reply = {"type": "done", "id": request["id"], "result": scope["result"], "error": None}
        except BaseException as error:  # the code's failure is the answer
            traceback.print_exc()
            reply = {"type": "done", "id": request["id"], "result": None, "error": f"{type(error).__name__}: {error}"}
        channel.send(reply)
    os._exit(0)
