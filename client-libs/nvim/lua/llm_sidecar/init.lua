-- llm_sidecar: a Neovim client of the llm-sidecar daemon.
--
-- Talks MessagePack-RPC (docs/protocol.md) over the daemon's Unix socket with its own libuv pipe
-- and vim.mpack, not through sockconnect(): a sockconnect() RPC channel drops the daemon's
-- `chat.chunk` notifications and shows its error maps as "unknown error". Works on Neovim 0.7+.
--
-- Every callback runs on the main loop (vim.schedule), in the order the daemon's messages came.
-- Errors handed to callbacks are the daemon's {code, message, data} tables (docs/protocol.md §4),
-- or a client-side one with code `daemon_not_running`, `connection_closed` or `protocol_error`.

local M = {}

local uv = vim.uv or vim.loop
local mpack = vim.mpack

-- The protocol revision this client was written for (docs/protocol.md).
M.PROTOCOL = 1

local defaults = {
  socket = nil, -- explicit socket path; else discovered (M.socket_path)
  app = "nvim", -- sent in daemon.hello: usage is metered under this name
  version = nil, -- optional app version for daemon.hello
  model = nil, -- default model for chat() and :LlmSidecarChat
  max_tokens = nil, -- default max_tokens for :LlmSidecarChat
  open = "new", -- Ex command that opens the window of :LlmSidecarChat
  timeout_ms = 60000, -- the default timeout of the *_sync functions
}

M.config = vim.deepcopy(defaults)

local function is_nil(v)
  return v == nil or v == vim.NIL
end

local function client_error(code, message, data)
  return { code = code, message = message, data = data or {} }
end

--- Where the daemon's socket is, by the daemon's own rules (docs/protocol.md §1): `explicit`,
--- else `$LLM_SIDECAR_SOCK`, else `$XDG_RUNTIME_DIR/llm-sidecar/sock`, else
--- `<$TMPDIR or /tmp>/llm-sidecar-<uid>/sock`. Empty values count as unset.
function M.socket_path(explicit)
  if explicit ~= nil and explicit ~= "" then
    return explicit
  end
  local sock = vim.env.LLM_SIDECAR_SOCK
  if sock ~= nil and sock ~= "" then
    return sock
  end
  local runtime = vim.env.XDG_RUNTIME_DIR
  if runtime ~= nil and runtime ~= "" then
    return (runtime:gsub("/+$", "")) .. "/llm-sidecar/sock"
  end
  local tmp = vim.env.TMPDIR
  if tmp == nil or tmp == "" then
    tmp = "/tmp"
  end
  return (tmp:gsub("/+$", "")) .. "/llm-sidecar-" .. uv.getuid() .. "/sock"
end

--- "code: message" for a daemon error table (what :LlmSidecarChat shows).
function M.format_error(err)
  if type(err) ~= "table" then
    return tostring(err)
  end
  return tostring(err.code or "error") .. ": " .. tostring(err.message or "")
end

-- An error element of a response as a {code, message, data} table. The daemon sends a map; a
-- connection whose daemon.hello asked for errors = "string" gets "code: message" instead.
local function normalize_error(e)
  if type(e) == "string" then
    local code, message = e:match("^([%w_]+): (.*)$")
    if code then
      return client_error(code, message)
    end
    return client_error("error", e)
  end
  if type(e) ~= "table" then
    return client_error("error", tostring(e))
  end
  if is_nil(e.data) then
    e.data = {}
  end
  if is_nil(e.code) then
    e.code = "error"
  end
  if is_nil(e.message) then
    e.message = ""
  end
  return e
end

-- Calls `fn(...)`, reporting an error it raises instead of letting it break the read loop.
local function safe_call(what, fn, ...)
  if fn == nil then
    return
  end
  local ok, e = pcall(fn, ...)
  if not ok then
    vim.notify("llm-sidecar: error in " .. what .. " callback: " .. tostring(e), vim.log.levels.ERROR)
  end
end

-- Params as sent: [] for none (nil or an empty table), else [params].
local function wrap_params(params)
  if params == nil or (type(params) == "table" and next(params) == nil and getmetatable(params) == nil) then
    return {}
  end
  return { params }
end

---------------------------------------------------------------------------------------------------
-- One connection to the daemon.

local Conn = {}
Conn.__index = Conn

function Conn.new(path, app, version)
  return setmetatable({
    path = path,
    app = app,
    version = version,
    state = "idle", -- idle | connecting | ready | closed
    next_id = 0,
    pending = {}, -- msgid -> {method, cb, on_chunk}
    queue = {}, -- frames waiting for the hello answer: {id, frame}
    warned_protocol = false,
  }, Conn)
end

function Conn:_next_id()
  repeat
    self.next_id = self.next_id % 4294967295 + 1
  until self.pending[self.next_id] == nil
  return self.next_id
end

-- Fails every waiting call with `err` and forgets the pipe (a later call reconnects).
function Conn:_drop(err)
  local pipe = self.pipe
  self.pipe = nil
  if pipe ~= nil then
    pcall(pipe.read_stop, pipe)
    if not pipe:is_closing() then
      pipe:close()
    end
  end
  if self.state ~= "closed" then
    self.state = "idle"
  end
  local pending = self.pending
  self.pending = {}
  self.queue = {}
  local ids = vim.tbl_keys(pending)
  table.sort(ids)
  for _, id in ipairs(ids) do
    safe_call(pending[id].method, pending[id].cb, err, nil)
  end
end

--- Closes the connection; calls still waiting fail with `connection_closed` (the daemon
--- cancels whatever still runs, as `$/cancel` would).
function Conn:close()
  self.state = "closed"
  self:_drop(client_error("connection_closed", "the client closed the connection"))
end

function Conn:_write(frame)
  local pipe = self.pipe
  pipe:write(frame, function(err)
    if err then
      vim.schedule(function()
        if self.pipe == pipe then
          self:_drop(client_error("connection_closed", "writing to the daemon failed: " .. tostring(err)))
        end
      end)
    end
  end)
end

function Conn:_dispatch(msg)
  if type(msg) ~= "table" then
    return
  end
  local kind = msg[1]
  if kind == 1 then
    local p = self.pending[msg[2]]
    if p == nil then
      return
    end
    self.pending[msg[2]] = nil
    local err, result = msg[3], msg[4]
    if is_nil(err) then
      err = nil
    else
      err = normalize_error(err)
    end
    if is_nil(result) then
      result = nil
    end
    safe_call(p.method, p.cb, err, result)
  elseif kind == 2 then
    local method, params = msg[2], msg[3]
    if method == "chat.chunk" and type(params) == "table" then
      local p = self.pending[params[1]]
      if p ~= nil and p.on_chunk ~= nil and type(params[2]) == "table" then
        safe_call("chat.chunk", p.on_chunk, params[2])
      end
    elseif method == "event" and type(params) == "table" and M.on_event ~= nil then
      safe_call("event", M.on_event, params[1])
    end
  end
end

-- Runs in libuv's callback (fast context): decodes, then hops to the main loop.
function Conn:_on_read(pipe, unpacker, err, data)
  if err or data == nil then
    vim.schedule(function()
      if self.pipe == pipe then
        local why = err and ("connection lost: " .. tostring(err)) or "the daemon closed the connection"
        self:_drop(client_error("connection_closed", why))
      end
    end)
    return
  end
  local msgs = {}
  local pos = 1
  while pos <= #data do
    local ok, obj, nextpos = pcall(unpacker, data, pos)
    if not ok then
      vim.schedule(function()
        for _, m in ipairs(msgs) do
          self:_dispatch(m)
        end
        if self.pipe == pipe then
          self:_drop(client_error("protocol_error", "the daemon sent bytes that are not MessagePack: " .. tostring(obj)))
        end
      end)
      pcall(pipe.read_stop, pipe)
      return
    end
    pos = nextpos
    if obj ~= nil then
      msgs[#msgs + 1] = obj
    end
  end
  if #msgs > 0 then
    vim.schedule(function()
      if self.pipe ~= pipe then
        return
      end
      for _, m in ipairs(msgs) do
        self:_dispatch(m)
      end
    end)
  end
end

function Conn:_on_hello(err, result)
  if err ~= nil then
    -- A refused hello (e.g. an invalid app name): fail what waits with that error.
    self:_drop(err)
    return
  end
  self.state = "ready"
  self.hello = result
  if type(result) == "table" and result.protocol ~= nil and result.protocol ~= M.PROTOCOL and not self.warned_protocol then
    self.warned_protocol = true
    vim.notify(
      ("llm-sidecar: the daemon speaks protocol %s, this plugin was written for %d; update one of them"):format(
        tostring(result.protocol),
        M.PROTOCOL
      ),
      vim.log.levels.WARN
    )
  end
  local queue = self.queue
  self.queue = {}
  for _, q in ipairs(queue) do
    if self.pending[q.id] ~= nil then
      self:_write(q.frame)
    end
  end
end

function Conn:_connect()
  if mpack == nil or mpack.Unpacker == nil then
    self:_drop(client_error("unsupported", "this Neovim has no vim.mpack.Unpacker: llm_sidecar needs Neovim 0.7 or newer"))
    return
  end
  self.state = "connecting"
  local pipe = uv.new_pipe(false)
  self.pipe = pipe
  local unpacker = mpack.Unpacker() -- one per connection: it keeps a partial message between reads
  pipe:connect(self.path, function(err)
    vim.schedule(function()
      if self.pipe ~= pipe then
        return
      end
      if err then
        self:_drop(client_error(
          "daemon_not_running",
          ("cannot connect to llm-sidecar at %s (%s): start it with `llm-sidecar serve`"):format(self.path, tostring(err))
        ))
        return
      end
      pipe:read_start(function(rerr, data)
        self:_on_read(pipe, unpacker, rerr, data)
      end)
      local hello = { app = self.app }
      if self.version ~= nil then
        hello.version = self.version
      end
      local id = self:_next_id()
      self.pending[id] = {
        method = "daemon.hello",
        cb = function(e, r)
          self:_on_hello(e, r)
        end,
      }
      self:_write(mpack.encode({ 0, id, "daemon.hello", { hello } }))
    end)
  end)
end

--- Sends a request; `cb(err, result)` runs once, on the main loop. `on_chunk(body)` gets the
--- request's `chat.chunk` notifications. Returns the msgid.
function Conn:request(method, params, cb, on_chunk)
  local id = self:_next_id()
  local ok, frame = pcall(mpack.encode, { 0, id, method, wrap_params(params) })
  if not ok then
    vim.schedule(function()
      safe_call(method, cb, client_error("invalid_params", "params cannot be encoded: " .. tostring(frame)), nil)
    end)
    return id
  end
  self.pending[id] = { method = method, cb = cb, on_chunk = on_chunk }
  if self.state == "ready" then
    self:_write(frame)
  else
    self.queue[#self.queue + 1] = { id = id, frame = frame }
    if self.state ~= "connecting" then
      self:_connect()
    end
  end
  return id
end

--- Cancels request `id` (`$/cancel`); its callback then gets the daemon's `cancelled` error.
--- A request not sent yet is failed with `cancelled` at once. Returns whether it was waiting.
function Conn:cancel(id)
  local p = self.pending[id]
  if p == nil then
    return false
  end
  for i, q in ipairs(self.queue) do
    if q.id == id then
      table.remove(self.queue, i)
      self.pending[id] = nil
      vim.schedule(function()
        safe_call(p.method, p.cb, client_error("cancelled", "cancelled before it was sent"), nil)
      end)
      return true
    end
  end
  if self.state == "ready" then
    self:_write(mpack.encode({ 2, "$/cancel", { id } }))
  end
  return true
end

M.Connection = Conn

---------------------------------------------------------------------------------------------------
-- The module's shared connection.

local conn = nil

--- The shared connection (created on first use with M.config).
function M.connection()
  if conn == nil or conn.state == "closed" then
    conn = Conn.new(M.socket_path(M.config.socket), M.config.app, M.config.version)
  end
  return conn
end

--- Configures the plugin (see `defaults`). Closes the current connection if the socket or app
--- changed; the next call connects (lazily) and names the app with daemon.hello.
function M.setup(opts)
  opts = opts or {}
  local new = vim.tbl_extend("force", vim.deepcopy(defaults), opts)
  local changed = new.socket ~= M.config.socket or new.app ~= M.config.app or new.version ~= M.config.version
  M.config = new
  if changed and conn ~= nil then
    conn:close()
    conn = nil
  end
  return M
end

--- Closes the shared connection (calls still running are cancelled by the daemon).
function M.close()
  if conn ~= nil then
    conn:close()
    conn = nil
  end
end

--- Any method: `cb(err, result)` on the main loop. Returns the msgid.
function M.request(method, params, cb)
  return M.connection():request(method, params, cb or function(err)
    if err then
      vim.notify(M.format_error(err), vim.log.levels.ERROR)
    end
  end)
end

--- Like M.request, but waits (vim.wait, the editor keeps processing events) at most
--- `timeout_ms`; returns `result, err`. On timeout the request is cancelled and err is
--- {code = "timeout"}.
function M.request_sync(method, params, timeout_ms)
  local done, res, e = false, nil, nil
  local c = M.connection()
  local id = c:request(method, params, function(err, result)
    done, res, e = true, result, err
  end)
  if not vim.wait(timeout_ms or M.config.timeout_ms, function()
    return done
  end, 10) then
    c:cancel(id)
    return nil, client_error("timeout", ("%s did not answer within %d ms"):format(method, timeout_ms or M.config.timeout_ms))
  end
  return res, e
end

--- usage.summary ({period?, group_by?, from?, to?}); `cb(err, result)`.
function M.usage(params, cb)
  if type(params) == "function" then
    params, cb = nil, params
  end
  return M.request("usage.summary", params, cb)
end

--- usage.records ({from?, to?, app?, provider?, model?, cursor?, limit?, order?}); `cb(err, result)`.
function M.usage_records(params, cb)
  if type(params) == "function" then
    params, cb = nil, params
  end
  return M.request("usage.records", params, cb)
end

--- quota.status; `cb(err, result)`.
function M.quota(cb)
  return M.request("quota.status", nil, cb)
end

---------------------------------------------------------------------------------------------------
-- chat

local Handle = {}
Handle.__index = Handle

--- Cancels the call (`$/cancel`); on_error then gets the daemon's `cancelled` error with the
--- usage billed so far in `err.data`. Returns whether the call was still running.
function Handle:cancel()
  if self.state ~= "running" then
    return false
  end
  return self.conn:cancel(self.id)
end

--- Waits (vim.wait) until the call ends, at most `timeout_ms`; returns `result, err`
--- (err {code = "timeout"} if it is still running).
function Handle:wait(timeout_ms)
  local ms = timeout_ms or M.config.timeout_ms
  if not vim.wait(ms, function()
    return self.state ~= "running"
  end, 10) then
    return nil, client_error("timeout", ("the chat did not end within %d ms"):format(ms))
  end
  return self.result, self.error
end

local running = {} -- handles of chats still running, in start order

local function forget(handle)
  for i, h in ipairs(running) do
    if h == handle then
      table.remove(running, i)
      return
    end
  end
end

--- Chats still running (started by M.chat or :LlmSidecarChat), oldest first.
function M.running()
  return vim.list_slice(running, 1, #running)
end

--- Starts a `chat` call (docs/chat.md). `params` is the daemon's chat params map (`model`
--- defaults to setup's `model`), or a string: one user message. With `on_chunk` the call streams
--- (unless params.stream is false): `on_chunk(text, chunk)` gets each `chat.chunk` body in
--- order, `text` its `delta` (nil for reasoning and tool-call pieces). `on_done(result)` gets the
--- complete result (content, usage, cost_microusd, ...); `on_error(err)` a {code, message, data}
--- error (by default it is shown with vim.notify). Returns a handle with :cancel() and :wait().
function M.chat(params, handlers)
  handlers = handlers or {}
  if type(params) == "string" then
    params = { messages = { { role = "user", content = params } } }
  else
    params = vim.tbl_extend("force", {}, params or {})
  end
  if params.model == nil then
    params.model = M.config.model
  end
  if params.stream == nil and handlers.on_chunk ~= nil then
    params.stream = true
  end
  local c = M.connection()
  local handle = setmetatable({ state = "running", conn = c, chunks = 0 }, Handle)
  running[#running + 1] = handle
  handle.id = c:request("chat", params, function(err, result)
    forget(handle)
    if err ~= nil then
      handle.state = err.code == "cancelled" and "cancelled" or "error"
      handle.error = err
      if handlers.on_error ~= nil then
        handlers.on_error(err)
      else
        vim.notify(M.format_error(err), vim.log.levels.ERROR)
      end
    else
      handle.state = "done"
      handle.result = result
      if handlers.on_done ~= nil then
        handlers.on_done(result)
      end
    end
  end, function(chunk)
    handle.chunks = handle.chunks + 1
    if handlers.on_chunk ~= nil then
      local text = chunk.delta
      if is_nil(text) then
        text = nil
      end
      handlers.on_chunk(text, chunk)
    end
  end)
  return handle
end

---------------------------------------------------------------------------------------------------
-- :LlmSidecarChat / :LlmSidecarCancel

local buffers = {} -- bufnr -> handle of the chat streaming into it
local chat_count = 0

local function append_text(buf, text)
  local last = vim.api.nvim_buf_line_count(buf)
  local line = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ""
  local parts = vim.split(text, "\n", { plain = true })
  parts[1] = line .. parts[1]
  vim.api.nvim_buf_set_lines(buf, last - 1, last, false, parts)
end

local function set_state(buf, state)
  if vim.api.nvim_buf_is_valid(buf) then
    vim.api.nvim_buf_set_var(buf, "llm_sidecar_state", state)
  end
end

--- Opens a scratch buffer (with setup's `open` command) and streams the answer to `prompt`
--- into it. `opts`: {model?, max_tokens?, system?}. Wiping the buffer cancels the call.
--- Returns the buffer and the chat handle. `b:llm_sidecar_state` is running, done, cancelled or
--- error; `b:llm_sidecar_usage` the result's usage when done.
function M.chat_buffer(prompt, opts)
  opts = opts or {}
  local model = opts.model or M.config.model
  if model == nil or model == "" then
    vim.notify("llm-sidecar: no model: pass -model=NAME or set `model` in setup()", vim.log.levels.ERROR)
    return nil, nil
  end
  vim.cmd(M.config.open)
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].buftype = "nofile"
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].swapfile = false
  vim.bo[buf].filetype = "markdown"
  chat_count = chat_count + 1
  pcall(vim.api.nvim_buf_set_name, buf, ("llm-sidecar://chat/%d"):format(chat_count))
  set_state(buf, "running")
  local params = { model = model, messages = { { role = "user", content = prompt } }, stream = true }
  params.max_tokens = opts.max_tokens or M.config.max_tokens
  params.system = opts.system
  local handle
  handle = M.chat(params, {
    on_chunk = function(text)
      if text ~= nil and text ~= "" and vim.api.nvim_buf_is_valid(buf) then
        append_text(buf, text)
      end
    end,
    on_done = function(result)
      buffers[buf] = nil
      set_state(buf, "done")
      local u = type(result) == "table" and result.usage or nil
      if type(u) == "table" then
        if vim.api.nvim_buf_is_valid(buf) then
          vim.api.nvim_buf_set_var(buf, "llm_sidecar_usage", u)
        end
        local cost = tonumber(result.cost_microusd) or 0
        vim.notify(
          ("llm-sidecar: %s in / %s out tokens%s, $%.6f"):format(
            tostring(u.input),
            tostring(u.output),
            u.estimated == true and " (estimated)" or "",
            cost / 1e6
          ),
          vim.log.levels.INFO
        )
      end
    end,
    on_error = function(err)
      buffers[buf] = nil
      set_state(buf, err.code == "cancelled" and "cancelled" or "error")
      vim.notify(M.format_error(err), err.code == "cancelled" and vim.log.levels.WARN or vim.log.levels.ERROR)
    end,
  })
  buffers[buf] = handle
  vim.api.nvim_create_autocmd({ "BufWipeout", "BufUnload" }, {
    buffer = buf,
    once = true,
    callback = function()
      local h = buffers[buf]
      buffers[buf] = nil
      if h ~= nil then
        h:cancel()
      end
    end,
  })
  return buf, handle
end

--- :LlmSidecarChat [-model=NAME] [-max_tokens=N] {prompt}
function M.chat_command(args)
  local opts = {}
  local rest = args
  while true do
    local key, value, after = rest:match("^%s*%-(%w[%w_]*)=(%S+)%s*(.*)$")
    if key == nil then
      break
    end
    if key == "model" then
      opts.model = value
    elseif key == "max_tokens" then
      opts.max_tokens = tonumber(value)
      if opts.max_tokens == nil then
        vim.notify("llm-sidecar: -max_tokens wants a number, got " .. value, vim.log.levels.ERROR)
        return
      end
    else
      vim.notify("llm-sidecar: unknown option -" .. key .. " (known: -model=, -max_tokens=)", vim.log.levels.ERROR)
      return
    end
    rest = after
  end
  rest = vim.trim(rest)
  if rest == "" then
    vim.notify("llm-sidecar: usage: :LlmSidecarChat [-model=NAME] {prompt}", vim.log.levels.ERROR)
    return
  end
  return M.chat_buffer(rest, opts)
end

--- :LlmSidecarCancel: cancels the chat streaming into the current buffer, else the most
--- recently started chat still running.
function M.cancel_command()
  local h = buffers[vim.api.nvim_get_current_buf()]
  if h == nil or h.state ~= "running" then
    h = running[#running]
  end
  if h == nil or not h:cancel() then
    vim.notify("llm-sidecar: no chat is running", vim.log.levels.INFO)
  end
end

return M
