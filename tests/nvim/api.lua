-- The Lua API against the real daemon: a streamed chat (every chunk, in order, and the result
-- with usage), a slow streamed chat cancelled mid-way, the ledger seen through the plugin, and a
-- quota_exceeded error. Env: NV_OUT, NV_MODEL (normal answers), NV_SLOW_MODEL (a slow stream);
-- the socket is found from $LLM_SIDECAR_SOCK like every client does.
local H = dofile(vim.env.NV_TESTS .. "/harness.lua")

H.run(function()
  local ls = require("llm_sidecar")
  ls.setup({ app = "nvim-test" })
  local out = H.out
  out.socket = ls.socket_path()

  -- 1. Streaming.
  local s = { texts = {}, seqs = {}, done_calls = 0, error_calls = 0 }
  local h = ls.chat({ model = H.env("NV_MODEL"), messages = { { role = "user", content = "Say hello" } } }, {
    on_chunk = function(text, chunk)
      table.insert(s.texts, text == nil and vim.NIL or text)
      table.insert(s.seqs, chunk.seq)
    end,
    on_done = function(result)
      s.done_calls = s.done_calls + 1
      s.result = { content = result.content, usage = result.usage, cost_microusd = result.cost_microusd,
        finish_reason = result.finish_reason, provider = result.provider }
      -- on_done comes after every chunk
      s.chunks_at_done = #s.texts
    end,
    on_error = function(err)
      s.error_calls = s.error_calls + 1
      s.error = err
    end,
  })
  H.check(h.id ~= nil, "chat returned no handle id")
  local res, err = h:wait(20000)
  H.check(err == nil, "streamed chat failed: " .. ls.format_error(err))
  s.state = h.state
  s.handle_chunks = h.chunks
  s.wait_content = res.content
  out.stream = s

  -- 2. A slow stream, cancelled after its second chunk.
  local c = { texts = {}, done_calls = 0, error_calls = 0 }
  local h2 = ls.chat({ model = H.env("NV_SLOW_MODEL"), messages = { { role = "user", content = "Count" } } }, {
    on_chunk = function(text)
      table.insert(c.texts, text)
    end,
    on_done = function()
      c.done_calls = c.done_calls + 1
    end,
    on_error = function(e)
      c.error_calls = c.error_calls + 1
      c.error = { code = e.code, message = e.message, usage = e.data.usage, content = e.data.content }
    end,
  })
  H.wait(20000, function()
    return #c.texts >= 2
  end, "two chunks of the slow stream")
  c.running_before = #ls.running()
  c.cancel_returned = h2:cancel()
  local _, cerr = h2:wait(10000)
  H.check(cerr ~= nil, "the cancelled chat did not end with an error")
  c.state = h2.state
  c.chunks_at_end = #c.texts
  c.running_after = #ls.running()
  c.cancel_again = h2:cancel()
  out.cancel = c

  -- 3. The ledger and the quota, through the plugin's own wrappers.
  local got = {}
  ls.usage_records({ order = "asc" }, function(e, r)
    got.records_err, got.records = e, r
  end)
  ls.usage({ group_by = "provider" }, function(e, r)
    got.usage_err, got.usage = e, r
  end)
  ls.quota(function(e, r)
    got.quota_err, got.quota = e, r
  end)
  H.wait(10000, function()
    return got.records ~= nil and got.usage ~= nil and got.quota ~= nil
  end, "usage.records, usage.summary and quota.status")
  out.records = {}
  for _, r in ipairs(got.records.records) do
    table.insert(out.records, { provider = r.provider, status = r.status, app = r.app, output_tokens = r.output_tokens })
  end
  out.usage_totals = got.usage.totals
  out.quota = { tier = got.quota.tier, limits = got.quota.limits }

  -- 4. Refused by the quota: the daemon's code, message and data.
  local q = {}
  ls.chat({ model = H.env("NV_MODEL"), messages = { { role = "user", content = "Say hello" } }, max_tokens = 100000 }, {
    on_done = function()
      q.done = true
    end,
    on_error = function(e)
      q.code, q.message, q.data = e.code, e.message, e.data
      q.formatted = ls.format_error(e)
    end,
  })
  H.wait(10000, function()
    return q.code ~= nil or q.done
  end, "the quota error")
  out.quota_error = q

  -- 5. A generic request, synchronous.
  local info, ierr = ls.request_sync("daemon.info", nil, 5000)
  H.check(ierr == nil, "daemon.info: " .. ls.format_error(ierr))
  out.info_app = info.app

  -- 6. A connection whose daemon.hello is refused (an empty app name): its calls get that error.
  local bad = ls.Connection.new(ls.socket_path(), "")
  local refused
  bad:request("daemon.info", nil, function(e)
    refused = e or { code = "none" }
  end)
  H.wait(5000, function()
    return refused ~= nil
  end, "the refused hello")
  out.refused_hello = { code = refused.code, message = refused.message }
  bad:close()
end)
