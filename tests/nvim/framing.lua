-- Frame decoding. (a) The connection's own read handler fed the bytes of several messages one
-- byte per read, then all in one read, then bytes that are not MessagePack. (b) Against the real
-- daemon: 500 usage.record requests written at once (many answers per read) and one
-- usage.records answer larger than a read (one message over many reads). Env: NV_OUT.
local H = dofile(vim.env.NV_TESTS .. "/harness.lua")

local function fake_pipe()
  return {
    closed = false,
    read_stop = function() end,
    is_closing = function(p)
      return p.closed
    end,
    close = function(p)
      p.closed = true
    end,
  }
end

-- Feeds `bytes` to a fresh connection in pieces of `size` bytes; returns what it dispatched.
local function feed(ls, bytes, size)
  local c = ls.Connection.new("/nonexistent", "x")
  local pipe = fake_pipe()
  c.pipe, c.state = pipe, "ready"
  local seen = {}
  c.pending[5] = {
    method = "chat",
    cb = function(err, result)
      table.insert(seen, { kind = "response", err = err and err.code or vim.NIL, content = result and result.content or vim.NIL })
    end,
    on_chunk = function(body)
      table.insert(seen, { kind = "chunk", delta = body.delta, seq = body.seq })
    end,
  }
  c.pending[6] = {
    method = "daemon.ping",
    cb = function(err, result)
      table.insert(seen, { kind = "response", err = err and err.code or vim.NIL, content = result and result.pong or vim.NIL })
    end,
  }
  local unpacker = vim.mpack.Unpacker()
  for i = 1, #bytes, size do
    c:_on_read(pipe, unpacker, nil, bytes:sub(i, i + size - 1))
  end
  vim.wait(50)
  return seen, c, pipe
end

H.run(function()
  local ls = require("llm_sidecar")
  ls.setup({ app = "nvim-framing" })
  local out = H.out
  local mp = vim.mpack
  local bytes = mp.encode({ 2, "chat.chunk", { 5, { delta = "Hel", seq = 0 } } })
    .. mp.encode({ 2, "chat.chunk", { 5, { delta = ("lo"):rep(100), seq = 1 } } })
    .. mp.encode({ 1, 6, vim.NIL, { pong = true, delay_ms = 0 } })
    .. mp.encode({ 2, "chat.chunk", { 99, { delta = "not ours", seq = 0 } } })
    .. mp.encode({ 1, 5, vim.NIL, { content = "Hel" .. ("lo"):rep(100) } })
    .. mp.encode({ 1, 5, vim.NIL, { content = "a second answer to the same id is ignored" } })
  out.one_byte_reads = feed(ls, bytes, 1)
  out.one_read = feed(ls, bytes, #bytes)
  out.seven_byte_reads = feed(ls, bytes, 7)
  -- 0xc1 is never used in MessagePack: the connection is dropped, waiting calls fail.
  local seen, c, pipe = feed(ls, mp.encode({ 1, 6, vim.NIL, { pong = true } }) .. "\193\0\0", 64)
  out.garbage = { seen = seen, pipe_closed = pipe.closed, state = c.state }

  -- (b) The real daemon.
  local n, acked, ids, errs = 500, 0, {}, {}
  for i = 1, n do
    ls.request("usage.record", {
      app = "nvim-framing",
      provider = "openai",
      model = "gpt-4o-mini",
      input_tokens = i,
      output_tokens = 7,
      cost_microusd = 10,
    }, function(err, result)
      acked = acked + 1
      if err then
        table.insert(errs, ls.format_error(err))
      else
        ids[result.id] = true
      end
    end)
  end
  H.wait(30000, function()
    return acked == n
  end, "500 usage.record answers")
  out.record_errors = errs
  out.distinct_ids = #vim.tbl_keys(ids)
  local page, err = ls.request_sync("usage.records", { limit = 1000, app = "nvim-framing" }, 20000)
  H.check(err == nil, "usage.records: " .. ls.format_error(err))
  out.page_records = #page.records
  out.page_bytes = #mp.encode(page)
  local matched = 0
  for _, r in ipairs(page.records) do
    if ids[r.id] then
      matched = matched + 1
    end
  end
  out.page_matched = matched
end)
