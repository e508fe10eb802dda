-- post.lua's run for the Open Inference Protocol: with BENCH_HEADER_LENGTH set, the body is a
-- binary-extension request (a JSON header of that many bytes, then the tensor's bytes), and the
-- length travels in the Inference-Header-Content-Length header it needs.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post.lua")

local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length then
  wrk.headers["Inference-Header-Content-Length"] = header_length
  wrk.headers["Content-Type"] = "application/octet-stream"
end
