// Sign in with the static token, or with username and password through POST /login when OIDC is on.

import { api, type Info, session } from "../api";
import { field, h, messageOf, show } from "../dom";
import { notice } from "../shell";

export function signInPage(main: HTMLElement, info: Info | null, signedIn: () => void): void {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", spellcheck: "false" });
  const username = h("input", { type: "text", name: "username", autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password" });
  const status = notice();
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");

  async function submit(event: Event): Promise<void> {
    event.preventDefault();
    status.clear();
    button.disabled = true;
    try {
      if (token.value.trim()) {
        const code = await api.whoami(token.value.trim());
        if (code === 401 || code === 403) throw new Error("The service did not accept this token.");
        if (code >= 500) throw new Error(`The service answered ${code}; try again.`);
        session.signIn(token.value.trim());
      } else if (username.value && password.value) {
        const tokens = await api.login(username.value, password.value);
        session.signIn(tokens.access_token, tokens.refresh_token);
      } else {
        throw new Error(info?.login ? "Enter a token, or a username and password." : "Enter a token.");
      }
      signedIn();
    } catch (error) {
      status.error(messageOf(error));
    } finally {
      button.disabled = false;
    }
  }

  show(
    main,
    h(
      "form",
      { class: "card signin", "aria-label": "Sign in", onsubmit: submit },
      h("h1", {}, "Sign in to Code Actions"),
      info?.login
        ? h(
            "fieldset",
            {},
            h("legend", {}, "With your account"),
            field("Username", username),
            field("Password", password),
          )
        : null,
      h(
        "fieldset",
        {},
        h("legend", {}, info?.login ? "Or with a token" : "With a token"),
        field("Token", token, "The service's static token or an OIDC access token."),
      ),
      button,
      status.el,
      h("p", { class: "muted" }, "The token is kept in this tab only, until you sign out or close it."),
    ),
  );
  (info?.login ? username : token).focus();
}
