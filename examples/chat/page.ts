/** The chat example's page (see examples/routes.ts). */
export const CHAT_PAGE = `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>deno-pusher chat</title>
<p>The chat example is being written.</p>
</html>
`;
