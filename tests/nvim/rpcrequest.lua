-- A plain sockconnect() RPC channel, as any Neovim script would open one: before
-- daemon.hello {errors = "string"} a refused call raises only "unknown error"; after it, the
-- exception holds "<code>: <message>", and daemon.last_error gives the whole error map.
-- Env: NV_OUT, NV_MODEL. The refused call asks for more tokens than the tier's quota.
local H = dofile(vim.env.NV_TESTS .. "/harness.lua")

H.run(function()
  local out = H.out
  vim.g.nv_model = H.env("NV_MODEL")
  vim.cmd([[
      let g:nv_ch = sockconnect('pipe', $LLM_SIDECAR_SOCK, {'rpc': v:true})
      let g:nv_params = {'model': g:nv_model, 'messages': [{'role': 'user', 'content': 'Say hello'}], 'max_tokens': 100000}
      let g:nv_before = ''
      try
        call rpcrequest(g:nv_ch, 'chat', g:nv_params)
      catch
        let g:nv_before = v:exception
      endtry
      let g:nv_hello = rpcrequest(g:nv_ch, 'daemon.hello', {'app': 't', 'errors': 'string'})
      let g:nv_after = ''
      try
        call rpcrequest(g:nv_ch, 'chat', g:nv_params)
      catch
        let g:nv_after = v:exception
      endtry
      let g:nv_last = rpcrequest(g:nv_ch, 'daemon.last_error')
      let g:nv_info = rpcrequest(g:nv_ch, 'daemon.info')
    ]])
  out.before = vim.g.nv_before
  out.after = vim.g.nv_after
  out.hello_app = vim.g.nv_hello.app
  out.last_error = vim.g.nv_last
  out.info_app = vim.g.nv_info.app
end)
