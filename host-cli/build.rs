fn main() {
    ckrv_guest_build::build("ckrv-plugin-chakravarti");
}
