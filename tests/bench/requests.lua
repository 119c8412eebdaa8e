-- wrk script for make bench (tests/bench/wrk.py writes its arguments):
--   wrk ... -s requests.lua <url> -- <request list> [<responses per thread before it stops> <done file>]
-- The request list has one request a line, "METHOD PATH BODY-FILE" ("-" for no body). Every request is built
-- once in init() and the connections of a thread send them in turn, so a list of several makes a mixed load.
-- With a response count, each thread stops after that many responses (the memory measurement's 1,000 and
-- 10,000 requests) and appends a line to the done file: wrk itself waits out its -d duration whatever its threads
-- do, so wrk.py interrupts it (SIGINT: wrk then prints its report) once every thread has written its line.
-- Without a count, response() stays undefined and wrk never parses a response body.

local requests = {}
local next_index = 0

function init(args)
   for line in io.lines(args[1]) do
      local method, path, file = line:match("^(%S+) (%S+) (%S+)$")
      local body = nil
      local headers = {}
      if file ~= "-" then
         local f = assert(io.open(file, "rb"))
         body = f:read("*a")
         f:close()
         headers["Content-Type"] = "application/json"
      end
      table.insert(requests, wrk.format(method, path, headers, body))
   end
   local stop_after = tonumber(args[2] or "0")
   local done_file = args[3]
   if stop_after > 0 then
      local seen = 0
      response = function(status, headers, body)
         seen = seen + 1
         if seen == stop_after then
            local f = assert(io.open(done_file, "a"))
            f:write("done\n")
            f:close()
            wrk.thread:stop()
         end
      end
   end
end

function request()
   next_index = next_index % #requests + 1
   return requests[next_index]
end
