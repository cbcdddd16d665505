wit_bindgen::generate!({
    path: "../../wit",
    world: "ckrv:cloud/provider-plugin",
    with: {
        "ckrv:cloud/types@0.1.0": ckrv_wit::types,
        "wasi:http/types@0.2.12": ckrv_wit::guest::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": ckrv_wit::guest::wasi::http::outgoing_handler,
        "wasi:io/poll@0.2.12": ckrv_wit::guest::wasi::io::poll,
        "wasi:io/error@0.2.12": ckrv_wit::guest::wasi::io::error,
        "wasi:io/streams@0.2.12": ckrv_wit::guest::wasi::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": ckrv_wit::guest::wasi::clocks::monotonic_clock,
    },
});
use exports::ckrv::cloud::provider::*;
use ckrv_wit::types::*;
struct P;
impl Guest for P {
    fn login_start(_c: CallContext) -> Result<DeviceAuthorization, ApiError> { Err(ApiError{error: ErrorKind::Internal, error_description: String::new()}) }
    fn login_poll(_c: CallContext, _d: String) -> Result<TokenSet, ApiError> { todo!() }
    fn refresh(_c: CallContext, _d: String) -> Result<TokenSet, ApiError> { todo!() }
    fn logout(_c: CallContext) -> Result<(), ApiError> { todo!() }
    fn whoami(_c: CallContext) -> Result<User, ApiError> { todo!() }
    fn credentials_add(_c: CallContext, _x: CredentialInput) -> Result<CredentialSummary, ApiError> { todo!() }
    fn credentials_list(_c: CallContext) -> Result<Vec<CredentialSummary>, ApiError> { todo!() }
    fn credentials_remove(_c: CallContext, _n: String) -> Result<(), ApiError> { todo!() }
    fn dispatch(_c: CallContext, _r: JobRequest) -> Result<Job, ApiError> { todo!() }
    fn get_job(_c: CallContext, _r: String) -> Result<Job, ApiError> { todo!() }
    fn list_jobs(_c: CallContext, _r: Option<String>, _l: u32) -> Result<JobPage, ApiError> { todo!() }
    fn cancel_job(_c: CallContext, _r: String) -> Result<Job, ApiError> { todo!() }
    fn read_logs(_c: CallContext, _r: String, _a: u64, _l: u32) -> Result<LogPage, ApiError> { let _ = ckrv_wit::guest::http::send("GET", "http://x/", &[], None); todo!() }
    fn fetch_diff(_c: CallContext, _r: String) -> Result<Vec<u8>, ApiError> { todo!() }
}
export!(P);
