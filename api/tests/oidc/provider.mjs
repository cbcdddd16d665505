// An OpenID Connect provider on loopback for ckrv-api's single sign-on tests (node-oidc-provider,
// with its development sign-in pages: any login, any password). A login of the form
// `unverified:EMAIL` vouches for EMAIL without verifying it.
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const config = {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  async findAccount(ctx, id) {
    const unverified = id.startsWith('unverified:');
    const email = unverified ? id.slice('unverified:'.length) : id;
    return {
      accountId: id,
      async claims() { return { sub: id, email, email_verified: !unverified }; },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
};
const provider = new Provider(`http://127.0.0.1:${port}`, config);
provider.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
