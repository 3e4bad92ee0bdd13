access_log {
  format   = "combined"
  template = "$remote_addr $bogus_var $status"
}
