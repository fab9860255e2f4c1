-- wrk script: POST the JSON body in $NF_WRK_BODY, then report through the same
-- `done` hook as the reads ($NF_WRK_DONE, bench/wrk_done.lua).
wrk.method = "POST"
wrk.body = os.getenv("NF_WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
dofile(os.getenv("NF_WRK_DONE"))
