// A single-page app on an origin of its own, as a customer's browser runs it: sign in
// (OAuth2 password flow, form-encoded), order a certificate paid from the balance, send the
// same order again with the same Idempotency-Key (as after a lost answer), read the balance,
// and show it all. The API's address and the credentials come in the query string.
"use strict";

const params = new URLSearchParams(location.search);
const api = params.get("api");

function show(id, value) {
  document.getElementById(id).textContent = value;
}

async function signIn() {
  const response = await fetch(`${api}/v1/auth/token`, {
    method: "POST",
    body: new URLSearchParams({ username: params.get("email"), password: params.get("password") }),
  });
  if (!response.ok) throw new Error(`sign-in: ${response.status} ${await response.text()}`);
  return (await response.json()).access_token;
}

async function placeOrder(token, idempotencyKey) {
  return fetch(`${api}/v1/orders`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${token}`,
      "Content-Type": "application/json",
      "Idempotency-Key": idempotencyKey,
    },
    body: JSON.stringify({ product_id: "ssl_dv", common_name: "www.example.com", validity_years: 1 }),
  });
}

async function run() {
  const token = await signIn();
  const idempotencyKey = crypto.randomUUID();
  const placed = await placeOrder(token, idempotencyKey);
  const order = await placed.json();
  if (placed.status !== 201) throw new Error(`order: ${placed.status} ${JSON.stringify(order)}`);
  show("order-id", order.id);
  show("order-status", order.status);
  show("order-amount", `${order.amount} ${order.currency}`);
  show("order-payment-method", order.payment_method);
  show("request-id", placed.headers.get("X-Request-ID"));

  const again = await placeOrder(token, idempotencyKey);
  show("retry-order-id", (await again.json()).id);
  show("retry-replayed", again.headers.get("Idempotent-Replayed"));

  const balance = await fetch(`${api}/v1/finance/balance`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const body = await balance.json();
  show("balance", `${body.balance} ${body.currency}`);
}

run().then(
  () => { document.body.dataset.state = "done"; },
  (error) => { show("error", String(error)); document.body.dataset.state = "failed"; },
);
