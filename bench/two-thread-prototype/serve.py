import asyncio, functools, os, sys
import uvloop, twothread

async def dbg(scope, receive, send):
    print(scope, await receive(), flush=True)
    await hello(scope, receive, send)

async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})

def main():
    port, mode = int(sys.argv[1]), sys.argv[2]  # mode: eventfd | cst
    app = dbg if os.environ.get('DBG') else hello
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    if mode == "eventfd":
        srv = twothread.Server(app, loop, port)
        loop.add_reader(srv.fd, srv.drain)
    else:
        srv = twothread.Server(app, loop, port, cst=True)
        srv.set_wake(functools.partial(loop.call_soon_threadsafe, srv.drain))
    import signal
    def stop():
        d, r = srv.stats(); print("stats drains=%d reqs=%d" % (d, r), flush=True); loop.stop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print("stats drains=%d reqs=%d" % srv.stats(), flush=True))
    print("ready", os.getpid(), flush=True)
    loop.run_forever()

main()
