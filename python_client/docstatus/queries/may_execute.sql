-- Client.may_execute: whether the connected role may call each function (by signature).
SELECT function, has_function_privilege(function, 'EXECUTE')
  FROM unnest(%(functions)s::text[]) AS function
