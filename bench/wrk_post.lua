-- wrk script: POST the JSON body in $NF_WRK_BODY, then report through the same
-- `done` hook as the reads ($NF_WRK_DONE, bench/wrk_done.lua). With $NF_WRK_KEYS set,
-- every request carries its own `Idempotency-Key` ($NF_WRK_KEYS-<thread>-<n>), as a
-- client that retries safely sends one per create; `@N@` in the body becomes that
-- same key, so each request can carry values no other request has (unique fields).
wrk.method = "POST"
wrk.body = os.getenv("NF_WRK_BODY")
wrk.headers["Content-Type"] = "application/json"

local keys = os.getenv("NF_WRK_KEYS")
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local template = wrk.body
local varies = template ~= nil and template:find("@N@", 1, true) ~= nil
local sent = 0
request = function()
  if keys then
    sent = sent + 1
    local key = keys .. "-" .. thread_no .. "-" .. sent
    wrk.headers["Idempotency-Key"] = key
    if varies then
      return wrk.format(nil, nil, nil, (template:gsub("@N@", key)))
    end
  end
  return wrk.format()
end

dofile(os.getenv("NF_WRK_DONE"))
