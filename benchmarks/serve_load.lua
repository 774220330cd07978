-- wrk's side of benchmarks/serve_load.py: POST one image per request to /v1/embed, cycling over the
-- benchmark's JPEG files, and print what wrk measured as one line the script parses.
--
--   wrk -t 2 -c 32 -d 5s -s benchmarks/serve_load.lua http://127.0.0.1:PORT -- raw FILE_LIST 2
--
-- Arguments after `--`: the body kind, `raw` (the JPEG as the whole body, Content-Type image/jpeg) or
-- `multipart` (one form field named `image`); a file holding one JPEG path a line; the thread count.
-- Every thread formats all its requests once in init(), so a request costs wrk a table lookup, and
-- starts at another place in the list. The last line of stdout is `serve_load.lua {...}` (JSON):
-- wrk's latency percentiles (microseconds), its error counts, and each thread's requests and
-- answers per status.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

local function read_file(path)
   local file = assert(io.open(path, "rb"))
   local data = file:read("*a")
   file:close()
   return data
end

local function multipart(name, data)
   local boundary = "serve-load-7d3f0c2a9b"
   local head = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"image\"; filename=\""
      .. name .. "\"\r\nContent-Type: image/jpeg\r\n\r\n"
   return head .. data .. "\r\n--" .. boundary .. "--\r\n", "multipart/form-data; boundary=" .. boundary
end

function init(args)
   local kind, list, count = args[1], args[2], tonumber(args[3] or "1")
   assert(kind == "raw" or kind == "multipart", "the first argument after -- is raw or multipart")
   bodies, statuses, sent = {}, {}, 0
   for path in io.lines(list) do
      local data, content_type = read_file(path), "image/jpeg"
      if kind == "multipart" then
         data, content_type = multipart(path:match("[^/]*$"), data)
      end
      table.insert(bodies, wrk.format("POST", "/v1/embed", { ["Content-Type"] = content_type }, data))
   end
   assert(#bodies > 0, "no image files listed in " .. list)
   start = math.floor((id - 1) * #bodies / count)
end

function request()
   local body = bodies[(start + sent) % #bodies + 1]
   sent = sent + 1
   return body
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

local function json_counts(counts)
   local parts = {}
   for key, n in pairs(counts) do
      table.insert(parts, string.format("\"%s\": %d", key, n))
   end
   return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
   local per_thread = {}
   for _, thread in ipairs(threads) do
      table.insert(per_thread, string.format("{\"sent\": %d, \"statuses\": %s}",
         thread:get("sent"), json_counts(thread:get("statuses"))))
   end
   local percentiles = {}
   for _, p in ipairs({ 50, 90, 95, 99 }) do
      table.insert(percentiles, string.format("\"p%d\": %d", p, latency:percentile(p)))
   end
   local e = summary.errors
   io.write(string.format(
      "serve_load.lua {\"duration_us\": %d, \"requests\": %d, \"bytes\": %d, "
         .. "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d, \"status\": %d}, "
         .. "\"latency_us\": {%s, \"mean\": %.1f, \"max\": %d}, \"threads\": [%s]}\n",
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      table.concat(percentiles, ", "), latency.mean, latency.max, table.concat(per_thread, ", ")))
end
