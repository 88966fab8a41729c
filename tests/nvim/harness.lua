-- Shared by the scripts tests/nvim.rs runs in headless Neovim: collects what the script saw in
-- `H.out`, writes it as JSON to $NV_OUT, and exits 0 (or 1, with the Lua error and traceback in
-- `lua_error`, when the script failed). Notifications are recorded instead of shown.
local H = { out = {}, notes = {} }

vim.notify = function(msg, level)
  table.insert(H.notes, { msg = tostring(msg), level = level or vim.log.levels.INFO })
end

function H.env(name)
  local v = vim.env[name]
  if v == nil or v == "" then
    error("the test harness did not set $" .. name)
  end
  return v
end

-- Waits (processing events) until `cond()` holds; fails the script after `ms`.
function H.wait(ms, cond, what)
  if not vim.wait(ms, cond, 5) then
    error(("timed out after %d ms waiting for %s"):format(ms, what), 2)
  end
end

function H.check(cond, msg)
  if not cond then
    error(msg, 2)
  end
end

function H.run(main)
  local ok, err = xpcall(main, debug.traceback)
  H.out.notifications = H.notes
  H.out.nvim_version = tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch
  if not ok then
    H.out.lua_error = tostring(err)
  end
  local f = assert(io.open(H.env("NV_OUT"), "w"))
  f:write(vim.fn.json_encode(H.out))
  f:close()
  if ok then
    vim.cmd("qall!")
  else
    vim.cmd("cquit 1")
  end
end

return H
