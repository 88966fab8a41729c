-- Commands of the llm-sidecar plugin; the module (lua/llm_sidecar) loads on first use.
if vim.g.loaded_llm_sidecar ~= nil then
  return
end
vim.g.loaded_llm_sidecar = 1

vim.api.nvim_create_user_command("LlmSidecarChat", function(o)
  require("llm_sidecar").chat_command(o.args)
end, { nargs = "+", desc = "llm-sidecar: stream an answer into a scratch buffer ([-model=NAME] {prompt})" })

vim.api.nvim_create_user_command("LlmSidecarCancel", function()
  require("llm_sidecar").cancel_command()
end, { nargs = 0, desc = "llm-sidecar: cancel the chat of this buffer (else the latest one)" })
