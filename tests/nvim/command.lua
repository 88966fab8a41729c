-- :LlmSidecarChat and :LlmSidecarCancel against the real daemon: an answer streamed into a
-- scratch buffer; a slow one cancelled with :LlmSidecarCancel; a slow one cancelled by wiping
-- its buffer. Env: NV_OUT, NV_MODEL (the setup default model), NV_SLOW_MODEL; no
-- $LLM_SIDECAR_SOCK: the socket is found in $XDG_RUNTIME_DIR.
local H = dofile(vim.env.NV_TESTS .. "/harness.lua")

local function state(buf)
  local ok, v = pcall(vim.api.nvim_buf_get_var, buf, "llm_sidecar_state")
  return ok and v or nil
end

local function text(buf)
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
end

H.run(function()
  vim.cmd("runtime plugin/llm_sidecar.lua")
  H.check(vim.fn.exists(":LlmSidecarChat") == 2, "plugin/llm_sidecar.lua did not define :LlmSidecarChat")
  local ls = require("llm_sidecar")
  ls.setup({ app = "nvim-test", model = H.env("NV_MODEL") })
  local out = H.out
  out.socket = ls.socket_path()
  local first = vim.api.nvim_get_current_buf()

  -- 1. The default model; the answer streams into a new scratch buffer.
  vim.cmd("LlmSidecarChat Say hello")
  local buf = vim.api.nvim_get_current_buf()
  H.check(buf ~= first, ":LlmSidecarChat did not open a buffer")
  local seen_running = state(buf)
  H.wait(20000, function()
    return state(buf) ~= "running"
  end, "the first answer")
  out.chat = {
    running_at_start = seen_running,
    state = state(buf),
    lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false),
    buftype = vim.bo[buf].buftype,
    name = vim.api.nvim_buf_get_name(buf),
    usage = vim.api.nvim_buf_get_var(buf, "llm_sidecar_usage"),
  }

  -- 2. -model= a slow stream, cancelled with :LlmSidecarCancel once text arrived.
  vim.cmd("LlmSidecarChat -model=" .. H.env("NV_SLOW_MODEL") .. " Count slowly")
  local buf2 = vim.api.nvim_get_current_buf()
  H.wait(20000, function()
    return #text(buf2) >= 6
  end, "text of the slow answer")
  vim.cmd("LlmSidecarCancel")
  H.wait(10000, function()
    return state(buf2) ~= "running"
  end, "the cancelled answer to end")
  out.cancel_command = { state = state(buf2), text = text(buf2) }

  -- 3. A slow stream whose buffer is wiped.
  vim.cmd("LlmSidecarChat -model=" .. H.env("NV_SLOW_MODEL") .. " Count again")
  local buf3 = vim.api.nvim_get_current_buf()
  H.wait(20000, function()
    return #text(buf3) >= 6
  end, "text of the third answer")
  local running = ls.running()
  H.check(#running == 1, "expected one running chat, got " .. #running)
  local handle = running[1]
  vim.cmd("bwipeout! " .. buf3)
  H.wait(10000, function()
    return handle.state ~= "running"
  end, "the chat of the wiped buffer to end")
  out.wipe = { state = handle.state, code = handle.error and handle.error.code, buffer_valid = vim.api.nvim_buf_is_valid(buf3) }

  -- 4. Bad option: a readable error, no buffer.
  local before = #vim.api.nvim_list_bufs()
  vim.cmd("LlmSidecarChat -colour=red hi")
  out.bad_option_new_buffers = #vim.api.nvim_list_bufs() - before
end)
