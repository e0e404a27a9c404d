/** The forms example's page (see examples/routes.ts). */
export const FORMS_PAGE = `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>deno-pusher forms</title>
<p>The forms example is being written.</p>
</html>
`;
