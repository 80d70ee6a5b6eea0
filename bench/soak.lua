-- Mixed HTTP/1.1 requests for bench/soak.py, in turn: GET /, POST /echo with 1 KiB, GET /stream.
local requests = {}
local turn = 0

function init(args)
  requests[1] = wrk.format("GET", "/")
  requests[2] = wrk.format("POST", "/echo", { ["Content-Type"] = "application/octet-stream" }, string.rep("a", 1024))
  requests[3] = wrk.format("GET", "/stream")
end

function request()
  turn = turn % 3 + 1
  return requests[turn]
end
